import GRDB

/// The query history database: tables, indexes and the analyst's view. Documented in
/// docs/query-history.md; every statement is idempotent so opening an existing file is safe.
///
/// Storage stays small by normalising: each distinct name and client is stored once, and
/// `history` holds one row per (name, client, type, hour) with a count and the first and last
/// time seen in that hour, not one row per query.
enum HistorySchema {
    static let version = 1

    static let statements = [
        """
        CREATE TABLE IF NOT EXISTS names(
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE)
        """,
        """
        CREATE TABLE IF NOT EXISTS clients(
            id INTEGER PRIMARY KEY,
            address TEXT NOT NULL UNIQUE)
        """,
        """
        CREATE TABLE IF NOT EXISTS history(
            name_id INTEGER NOT NULL,
            client_id INTEGER NOT NULL,
            qtype INTEGER NOT NULL,
            hour INTEGER NOT NULL,
            count INTEGER NOT NULL,
            first_seen INTEGER NOT NULL,
            last_seen INTEGER NOT NULL,
            PRIMARY KEY(name_id, client_id, qtype, hour)) WITHOUT ROWID
        """,
        "CREATE INDEX IF NOT EXISTS history_hour ON history(hour)",
        """
        CREATE TABLE IF NOT EXISTS retro_reported(
            client_id INTEGER NOT NULL,
            name_id INTEGER NOT NULL,
            last_seen INTEGER NOT NULL,
            reported_at INTEGER NOT NULL,
            PRIMARY KEY(client_id, name_id)) WITHOUT ROWID
        """,
        """
        CREATE VIEW IF NOT EXISTS query_history AS
        SELECT c.address AS client, n.name AS name,
               CASE h.qtype WHEN 1 THEN 'A' WHEN 2 THEN 'NS' WHEN 5 THEN 'CNAME' WHEN 6 THEN 'SOA'
                    WHEN 12 THEN 'PTR' WHEN 15 THEN 'MX' WHEN 16 THEN 'TXT' WHEN 28 THEN 'AAAA'
                    WHEN 33 THEN 'SRV' WHEN 64 THEN 'SVCB' WHEN 65 THEN 'HTTPS' WHEN 255 THEN 'ANY'
                    ELSE 'TYPE' || h.qtype END AS qtype,
               strftime('%Y-%m-%dT%H:00:00Z', h.hour * 3600, 'unixepoch') AS hour,
               h.count AS count,
               strftime('%Y-%m-%dT%H:%M:%fZ', h.first_seen / 1000.0, 'unixepoch') AS first_seen,
               strftime('%Y-%m-%dT%H:%M:%fZ', h.last_seen / 1000.0, 'unixepoch') AS last_seen
        FROM history h JOIN names n ON n.id = h.name_id JOIN clients c ON c.id = h.client_id
        """,
    ]

    static func create(_ db: Database) throws {
        for sql in statements { try db.execute(sql: sql) }
        try db.execute(sql: "PRAGMA user_version = \(version)")
    }
}
