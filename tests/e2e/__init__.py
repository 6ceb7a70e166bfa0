"""End-to-end tests: a real `modhub serve`, driven as its users drive it."""
