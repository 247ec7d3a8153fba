"""Workflows: the one place that runs steps against a workspace and its results store — `cache`, `train`,
`eval`, `circuits` and `demo` (all of them in a row); `storage` builds each store row they write. The CLI is a
thin parser over these; the library below them knows no workspace."""
