--
-- Add field weight_grams to product
--
ALTER TABLE `catalog_product` ADD COLUMN `weight_grams` integer UNSIGNED NULL CHECK (`weight_grams` >= 0);
--
-- Remove field legacy_sku from product
--
ALTER TABLE `catalog_product` DROP COLUMN `old_sku`;
--
-- Rename field title on product to name
--
ALTER TABLE `catalog_product` RENAME COLUMN `title` TO `name`;
--
-- Alter field price on product
--
ALTER TABLE `catalog_product` RENAME COLUMN `price` TO `unit_price`;
