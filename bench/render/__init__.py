"""Results turned into text and pictures for people (Markdown, console, plots) and rows for machines
(CSV). Never measures; torch-free."""
