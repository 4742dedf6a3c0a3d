"""Dev-only tools (local stack, Plivo simulator, packaging); never deployed."""
