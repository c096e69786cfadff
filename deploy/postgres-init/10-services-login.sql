-- The login `giftledger run` connects as in docker-compose.yml (SERVICES_DATABASE_URL). It owns
-- nothing and acts only through the two roles the migrations grant their rights to, so no
-- statement on the services' connections can leave them for the schema's owner (`giftledger`,
-- which runs the migrations). The postgres image runs this once, as POSTGRES_USER, when it
-- initialises a new data volume. The two roles are made here, as migrations 0005 and 0007 make
-- them when missing, so that the login can be their member before `giftledger migrate` runs.
-- The password is for a local sandbox only; never reuse it.
CREATE ROLE giftledger_reader NOLOGIN;
CREATE ROLE giftledger_writer NOLOGIN;
CREATE ROLE giftledger_services LOGIN PASSWORD 'giftledger-services'
    IN ROLE giftledger_writer, giftledger_reader;
