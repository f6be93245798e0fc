"""Online ILP: predict during SFT which examples will end unlearned, and why (`warning`), from what
the run knows at step t (`features`)."""
