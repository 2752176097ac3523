"""The best-practice base (最佳实践案例库): the item type `case` and its template. Who may propose and
approve cases is app/knowledge/proposals.py; cases otherwise are ordinary items (versions, review,
publishing, search, channels)."""
