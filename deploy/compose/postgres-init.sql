-- First start of the compose stack's PostgreSQL (docker-entrypoint-initdb.d), as the superuser: the
-- service's role (row-level security applies to it; schema/00010_rls.sql) and the simulated directory's
-- database. POSTGRES_USER (coredict) owns the tables and runs the migrations.
CREATE ROLE coredict_app LOGIN PASSWORD 'coredict_app';
CREATE DATABASE dictsim OWNER coredict;
