"""Core ML fixtures converted in the tests with coremltools (filled in by the Core ML reader work)."""
