"""The two stage trainers (full frame, face), their losses, and the training loop."""
