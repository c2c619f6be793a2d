"""The activation index: per-unit bounded samples (state, update, merge), its on-disk store and builder, and context sampling."""
