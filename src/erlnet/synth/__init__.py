"""erlnet.synth"""
