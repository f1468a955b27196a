--
-- Remove field nickname from user
--
ALTER TABLE `accounts_user` DROP COLUMN `display_nick`;
