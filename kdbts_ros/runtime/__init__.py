"""Layer 3: the frame runner shared by node and tools (queues, rig frames, drops, diagnostics), TF store, pictures."""
