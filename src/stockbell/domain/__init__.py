"""Pure model and rules. Imports nothing but the standard library and itself."""
