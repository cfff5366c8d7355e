"""Task-specific code: seeded data generators and external rewards for the shipped programs."""
