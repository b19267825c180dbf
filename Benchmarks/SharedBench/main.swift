print("shared-bench: not yet implemented")
