DELETE FROM shop_product; TRUNCATE orders; DROP SCHEMA s CASCADE; DROP TABLE IF EXISTS "Shop Items", main.t;
