"""The schema's behaviour beside its tables: every function and trigger the application relies
on, written out in full, one file each, under functions/ (`<function>.sql`) and triggers/
(`<table>.<trigger>.sql`). These files are the current truth. Migrations are frozen history:
one that changes an object carries a copy of its new text for upgrade() and of its previous text
for downgrade(), and imports nothing from here.

`drift` tells where a database defines these objects otherwise than their files: the test suite
runs it on a database migrated to head, and `python tasks.py db:<env>:sql-drift` on yours.
"""

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

SQL_DIR = Path(__file__).parent

Kind = Literal["function", "trigger", "type"]
Key = tuple[Kind, str]


@dataclass(frozen=True)
class SqlObject:
    kind: Kind
    name: str  # the function's name, or "table.trigger"
    path: Path

    @property
    def key(self) -> Key:
        return self.kind, self.name

    @property
    def definition(self) -> str:
        return self.path.read_text()

    def __str__(self) -> str:
        return str(self.path.relative_to(SQL_DIR.parents[2]))


_FOLDERS: dict[Kind, str] = {"function": "functions", "trigger": "triggers"}


def sql_objects() -> list[SqlObject]:
    return [
        SqlObject(kind, path.stem, path)
        for kind, folder in _FOLDERS.items()
        for path in sorted((SQL_DIR / folder).glob("*.sql"))
    ]


# The objects of the public schema that migrations made, as PostgreSQL writes them out again:
# functions (not an extension's), triggers (not a foreign key's) and composite types, which
# have no file kind yet and so are reported whenever one appears.
_DEFINED = text(
    """
    SELECT 'function', p.proname, pg_get_functiondef(p.oid)
    FROM pg_proc p
    WHERE p.pronamespace = 'public'::regnamespace
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
    UNION ALL
    SELECT 'trigger', c.relname || '.' || t.tgname, pg_get_triggerdef(t.oid)
    FROM pg_trigger t
    JOIN pg_class c ON c.oid = t.tgrelid
    WHERE c.relnamespace = 'public'::regnamespace
      AND NOT t.tgisinternal
    UNION ALL
    SELECT 'type', t.typname, ''
    FROM pg_type t
    JOIN pg_class c ON c.oid = t.typrelid
    WHERE t.typnamespace = 'public'::regnamespace
      AND c.relkind = 'c'
    """
)


def _defined(connection: Connection) -> dict[Key, list[str]]:
    defined: defaultdict[Key, list[str]] = defaultdict(list)
    for kind, name, definition in connection.execute(_DEFINED):
        defined[kind, name].append(definition)
    return {key: sorted(definitions) for key, definitions in defined.items()}


def drift(connection: Connection) -> list[str]:
    """One line per object that the database defines otherwise than its file, lacks, or has with
    no file. Each file's text is run over the database's definition in a savepoint, and what
    PostgreSQL then writes out is compared with what it wrote before; the savepoint is rolled
    back, so the database is left as it was."""
    files = {each.key: each for each in sql_objects()}
    before = _defined(connection)
    problems = [
        f"{kind} {name}: in the database, but no file under app/models/sql defines it"
        for kind, name in sorted(before.keys() - files.keys())
    ]
    with connection.begin_nested() as outer:
        for key, each in list(files.items()):
            try:
                with connection.begin_nested():
                    connection.exec_driver_sql(each.definition)
            except DBAPIError as error:
                reason = str(error.orig).strip().splitlines()[0]
                problems.append(f"{each}: cannot replace the database's definition ({reason})")
                files.pop(key)
        after = _defined(connection)
        outer.rollback()
    for key, each in files.items():
        if key not in before:
            problems.append(f"{each}: not in the database")
        elif before[key] != after[key]:
            problems.append(f"{each}: the database defines it otherwise")
    return problems
