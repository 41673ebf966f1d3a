"""The docs site's build-time code: the MkDocs hooks named in mkdocs.yml."""
