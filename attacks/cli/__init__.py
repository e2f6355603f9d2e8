"""`secure-collab attack` and `secure-collab audit`, registered as plugins of the core command line."""
