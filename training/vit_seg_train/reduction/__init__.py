"""Static-shape token reduction: primitives, policies, per-layer schedules, wiring into timm."""
