"""Where the prediction log and the feedback labels are kept, for the gateways that write them
and the monitoring job that reads them: SQLite files in a folder (the default, one host) or one
PostgreSQL database (gateways on many hosts). One table definition (`tables`), one interface
(`store.LogStore`), versioned migrations (`migrations/`)."""
