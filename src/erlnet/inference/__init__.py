"""erlnet.inference"""
