BEGIN;
--
-- Rename model Tag to Label
--
ALTER TABLE "catalog_tag" RENAME TO "catalog_label";
SET CONSTRAINTS "catalog_product_tags_tag_id_fb8826f6_fk_catalog_tag_id" IMMEDIATE; ALTER TABLE "catalog_product_tags" DROP CONSTRAINT "catalog_product_tags_tag_id_fb8826f6_fk_catalog_tag_id";
ALTER TABLE "catalog_product_tags" RENAME COLUMN "tag_id" TO "label_id";
ALTER TABLE "catalog_product_tags" ADD CONSTRAINT "catalog_product_tags_label_id_f252edab_fk_catalog_label_id" FOREIGN KEY ("label_id") REFERENCES "catalog_label" ("id") DEFERRABLE INITIALLY DEFERRED;
COMMIT;
