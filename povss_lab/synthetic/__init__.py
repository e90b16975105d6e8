"""A procedural world where the whole method can be trained and measured offline."""
