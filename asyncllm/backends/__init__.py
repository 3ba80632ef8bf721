"""One module per backend; each describes only its wire format."""
