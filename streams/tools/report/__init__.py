"""The bilateral review report: figures (`aggregate`), page (`render`), `fusion report` (`read`)."""
