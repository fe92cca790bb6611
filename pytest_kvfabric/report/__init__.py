"""Reports: terminal table, JSON session report + environment fingerprint, baseline comparison."""
