"""Pictures: RCM examples (Fig. 3 of the paper)."""
