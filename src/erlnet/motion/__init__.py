"""erlnet.motion"""
