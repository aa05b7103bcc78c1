-- FusionPBX's dialplan and access-control tables as FusionPBX 5.5+ creates them on PostgreSQL
-- (app/dialplans, core/domains and app/access_controls app_config.php). FusionPBX adds no
-- constraints besides the primary keys: no NOT NULL, no foreign keys, no indexes.
-- For tests only: the apply tool never creates tables. In FusionPBX <= 5.4 the flag columns
-- dialplan_destination, dialplan_continue and dialplan_enabled are `text` ('true'/'false');
-- tests/test_dialplan.py derives that flavour from this file.

CREATE TABLE v_domains (
    domain_uuid uuid PRIMARY KEY,
    domain_parent_uuid uuid,
    domain_name text,
    domain_enabled boolean,
    domain_description text,
    insert_date timestamptz,
    insert_user uuid,
    update_date timestamptz,
    update_user uuid
);

CREATE TABLE v_dialplans (
    domain_uuid uuid,
    dialplan_uuid uuid PRIMARY KEY,
    app_uuid uuid,
    hostname text,
    dialplan_context text,
    dialplan_name text,
    dialplan_number text,
    dialplan_destination boolean,
    dialplan_continue boolean,
    dialplan_xml text,
    dialplan_order numeric,
    dialplan_enabled boolean,
    dialplan_description text,
    insert_date timestamptz,
    insert_user uuid,
    update_date timestamptz,
    update_user uuid
);

CREATE TABLE v_dialplan_details (
    domain_uuid uuid,
    dialplan_uuid uuid,
    dialplan_detail_uuid uuid PRIMARY KEY,
    dialplan_detail_tag text,
    dialplan_detail_type text,
    dialplan_detail_data text,
    dialplan_detail_break text,
    dialplan_detail_inline text,
    dialplan_detail_group numeric,
    dialplan_detail_order numeric,
    dialplan_detail_enabled boolean,
    insert_date timestamptz,
    insert_user uuid,
    update_date timestamptz,
    update_user uuid
);

CREATE TABLE v_access_controls (
    access_control_uuid uuid PRIMARY KEY,
    access_control_name text,
    access_control_default text,
    access_control_description text,
    insert_date timestamptz,
    insert_user uuid,
    update_date timestamptz,
    update_user uuid
);

CREATE TABLE v_access_control_nodes (
    access_control_node_uuid uuid PRIMARY KEY,
    access_control_uuid uuid,
    node_type text,
    node_cidr text,
    node_description text,
    insert_date timestamptz,
    insert_user uuid,
    update_date timestamptz,
    update_user uuid
);
