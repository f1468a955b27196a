#!/usr/bin/env python3
"""Writes a Django-style application log of about SIZE bytes where 0.1% of the
lines belong to database "missing table/column" errors (each a record line plus
a chained traceback, as Django logs them).

    benches/gen_log.py OUT [SIZE_MB]   (default 1024)
"""
import random
import sys

out = sys.argv[1]
size = int(sys.argv[2] if len(sys.argv) > 2 else 1024) << 20
rng = random.Random(7)

paths = ["/catalog/%d/" % i for i in range(500)] + ["/orders/%d/" % i for i in range(500)]
ok_templates = [
    '{t} INFO django.server "GET {p} HTTP/1.1" 200 {n}',
    '{t} INFO django.server "POST {p} HTTP/1.1" 302 0',
    '{t} WARNING django.request Not Found: {p}',
    '{t} DEBUG django.db.backends (0.{n:03d}) SELECT "catalog_product"."id" FROM "catalog_product" WHERE "catalog_product"."id" = {n}; args=({n},)',
]
errors = [
    ('column catalog_product.notes does not exist', 'psycopg.errors.UndefinedColumn', 'django.db.utils.ProgrammingError'),
    ('relation "legacy_coupon" does not exist', 'psycopg.errors.UndefinedTable', 'django.db.utils.ProgrammingError'),
    ("(1054, \"Unknown column 'catalog_product.notes' in 'field list'\")", 'pymysql.err.OperationalError', 'django.db.utils.OperationalError'),
    ("(1146, \"Table 'shop.legacy_coupon' doesn't exist\")", 'pymysql.err.ProgrammingError', 'django.db.utils.ProgrammingError'),
    ('no such column: catalog_product.notes', 'sqlite3.OperationalError', 'django.db.utils.OperationalError'),
]


def traceback(t, p, message, inner, outer):
    return "\n".join([
        f"{t} ERROR django.request Internal Server Error: {p}",
        "Traceback (most recent call last):",
        '  File "/srv/app/venv/lib/python3.11/site-packages/django/db/backends/utils.py", line 105, in _execute',
        "    return self.cursor.execute(sql, params)",
        "           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^",
        f"{inner}: {message}",
        "",
        "The above exception was the direct cause of the following exception:",
        "",
        "Traceback (most recent call last):",
        '  File "/srv/app/catalog/views.py", line 12, in detail',
        "    product = Product.objects.get(pk=pk)",
        f"{outer}: {message}",
    ])


written = 0
lines = 0
error_lines = 0
second = 0
with open(out, "w") as f:
    while written < size:
        block = []
        for _ in range(10000):
            second += 1
            t = "2026-11-25 %02d:%02d:%02d,%03d" % ((second // 3600000) % 24, (second // 60000) % 60, (second // 1000) % 60, second % 1000)
            p = rng.choice(paths)
            if rng.random() < 0.001 / 13:  # an error event is 13 lines: error lines stay at ~0.1%
                message, inner, outer = rng.choice(errors)
                text = traceback(t, p, message, inner, outer)
                error_lines += 13
                lines += 13
            else:
                text = rng.choice(ok_templates).format(t=t, p=p, n=rng.randrange(1000))
                lines += 1
            block.append(text)
        chunk = "\n".join(block) + "\n"
        f.write(chunk)
        written += len(chunk)
print(f"{out}: {written} bytes, {lines} lines, {error_lines} in error events ({100 * error_lines / lines:.2f}%)", file=sys.stderr)
