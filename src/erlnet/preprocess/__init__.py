"""erlnet.preprocess"""
