"""erlnet.eval"""
