"""Cases: alerts of one rule on one key grouped while someone looks at them, then closed with
a disposition. ``model`` is pure (ids, items, the close request); ``store`` is the DynamoDB
side (grouping an alert beside its row, listing, closing); ``http`` the API; ``labels`` the
labels topic every disposition and chargeback goes to."""
