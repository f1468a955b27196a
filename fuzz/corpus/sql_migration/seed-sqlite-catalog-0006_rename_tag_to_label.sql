BEGIN;
--
-- Rename model Tag to Label
--
ALTER TABLE "catalog_tag" RENAME TO "catalog_label";
CREATE TABLE "new__catalog_product_tags" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "product_id" bigint NOT NULL REFERENCES "catalog_product" ("id") DEFERRABLE INITIALLY DEFERRED, "label_id" bigint NOT NULL REFERENCES "catalog_label" ("id") DEFERRABLE INITIALLY DEFERRED);
INSERT INTO "new__catalog_product_tags" ("id", "label_id", "product_id") SELECT "id", "tag_id", "product_id" FROM "catalog_product_tags";
DROP TABLE "catalog_product_tags";
ALTER TABLE "new__catalog_product_tags" RENAME TO "catalog_product_tags";
CREATE UNIQUE INDEX "catalog_product_tags_product_id_label_id_828183b3_uniq" ON "catalog_product_tags" ("product_id", "label_id");
CREATE INDEX "catalog_product_tags_product_id_293d7e82" ON "catalog_product_tags" ("product_id");
CREATE INDEX "catalog_product_tags_label_id_f252edab" ON "catalog_product_tags" ("label_id");
COMMIT;
