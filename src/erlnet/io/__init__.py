"""erlnet.io"""
