"""Tables, plots and HTML reports rendered from stored results."""
