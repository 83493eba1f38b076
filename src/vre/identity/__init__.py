"""Identity: accounts, tokens and passwords."""
