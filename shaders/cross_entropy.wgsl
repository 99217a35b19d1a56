// placeholder: filled in by its kernel's implementation
