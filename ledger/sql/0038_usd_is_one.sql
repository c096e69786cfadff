-- FX rates are units of a currency per 1 USD, so USD's own rate is 1 at every moment (migration
-- 0004 seeds it so). A second USD version with another value would price every USD cash-out at
-- it: 2 per USD pays 20.00 USD for Diamonds worth 10.00. `giftledger rates fx-add` refuses USD
-- (services/rates/fx.py); the table refuses it too, for any writer, from now on. NOT VALID:
-- a version added before this migration (the rows are immutable) is kept as it is, and the
-- cash-out desk prices USD at 1 whatever the table holds (services/cashout/request_facts.py).
ALTER TABLE fx_rates ADD CONSTRAINT fx_rates_usd_is_one
    CHECK (currency <> 'USD' OR units_per_usd_numerator = units_per_usd_denominator) NOT VALID;
