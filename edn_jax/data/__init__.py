"""Training data: the TFDS dataset of pose frames, its builder, and the batches the trainers consume."""
