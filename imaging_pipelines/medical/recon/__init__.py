"""CT reconstruction from sinograms: filtered back-projection and SART onto a declared LPS mm grid."""
