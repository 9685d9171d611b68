"""What the platform keeps: the registry (users, keys, apps, revisions, audit), the request queue, the secret box, and the schema's migrations."""
