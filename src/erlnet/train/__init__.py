"""erlnet.train"""
