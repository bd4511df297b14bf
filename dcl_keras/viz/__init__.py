"""Pictures: RCM examples (Fig. 3 of the paper), CAMs and filter responses (Figs. 5, 6)."""
