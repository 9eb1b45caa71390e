"""edn_synthetic: the built-in synthetic subject as a pose-frame dataset."""
