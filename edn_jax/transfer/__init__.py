"""Motion transfer: source videos in, the target dancing them out, resumable."""
