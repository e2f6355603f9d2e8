"""secure-collab: collaborative MEMIT editing whose per-party statistics stay protected."""

__version__ = "0.1.0"
