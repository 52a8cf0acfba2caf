"""RunPod: the HTTP client of its API, its typed bodies, our callback URLs, and recording the results it posts
back.
"""
