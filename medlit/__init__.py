"""medlit: explainability methods for medical imaging, benchmarked against known ground truth.

The package holds every kernel and metric the book's chapters call. Importing it has no side effects:
no downloads, no global warning filters, no thread settings.
"""

__version__ = "0.1.0"
