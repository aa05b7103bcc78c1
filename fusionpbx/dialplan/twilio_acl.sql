-- Trust Twilio's SIP signalling in FusionPBX's `providers` ACL (idempotent).
-- Generated from twilio_signalling_cidrs.txt by:
--   python -m voice_app.pbx.apply --print-acl-sql > fusionpbx/dialplan/twilio_acl.sql
-- Then flush the configuration:acl.conf cache and run: fs_cli -x reloadacl
BEGIN;
INSERT INTO v_access_control_nodes (access_control_node_uuid, access_control_uuid,
    node_type, node_cidr, node_description, insert_date)
SELECT '31a891eb-764e-5efc-953e-90b87e1838e1'::uuid, a.access_control_uuid, 'allow', '54.172.60.0/30'::text, 'Twilio SIP signalling: North America Virginia (us1)'::text, now()
FROM v_access_controls a WHERE a.access_control_name = 'providers'
AND NOT EXISTS (SELECT 1 FROM v_access_control_nodes n
    WHERE n.access_control_uuid = a.access_control_uuid AND n.node_cidr = '54.172.60.0/30'::text);
INSERT INTO v_access_control_nodes (access_control_node_uuid, access_control_uuid,
    node_type, node_cidr, node_description, insert_date)
SELECT '66c44f75-9598-5df7-826b-888ae44d9514'::uuid, a.access_control_uuid, 'allow', '54.244.51.0/30'::text, 'Twilio SIP signalling: North America Oregon (us2)'::text, now()
FROM v_access_controls a WHERE a.access_control_name = 'providers'
AND NOT EXISTS (SELECT 1 FROM v_access_control_nodes n
    WHERE n.access_control_uuid = a.access_control_uuid AND n.node_cidr = '54.244.51.0/30'::text);
INSERT INTO v_access_control_nodes (access_control_node_uuid, access_control_uuid,
    node_type, node_cidr, node_description, insert_date)
SELECT '9790a99a-d8ed-5379-a00a-7b0707551401'::uuid, a.access_control_uuid, 'allow', '54.171.127.192/30'::text, 'Twilio SIP signalling: Europe Ireland (ie1)'::text, now()
FROM v_access_controls a WHERE a.access_control_name = 'providers'
AND NOT EXISTS (SELECT 1 FROM v_access_control_nodes n
    WHERE n.access_control_uuid = a.access_control_uuid AND n.node_cidr = '54.171.127.192/30'::text);
INSERT INTO v_access_control_nodes (access_control_node_uuid, access_control_uuid,
    node_type, node_cidr, node_description, insert_date)
SELECT '02361c90-4707-5dda-bb3f-5f3a08966317'::uuid, a.access_control_uuid, 'allow', '35.156.191.128/30'::text, 'Twilio SIP signalling: Europe Frankfurt (de1)'::text, now()
FROM v_access_controls a WHERE a.access_control_name = 'providers'
AND NOT EXISTS (SELECT 1 FROM v_access_control_nodes n
    WHERE n.access_control_uuid = a.access_control_uuid AND n.node_cidr = '35.156.191.128/30'::text);
INSERT INTO v_access_control_nodes (access_control_node_uuid, access_control_uuid,
    node_type, node_cidr, node_description, insert_date)
SELECT '6b236564-768c-541d-81d3-a63a35f34d93'::uuid, a.access_control_uuid, 'allow', '54.65.63.192/30'::text, 'Twilio SIP signalling: Asia-Pacific Tokyo (jp1)'::text, now()
FROM v_access_controls a WHERE a.access_control_name = 'providers'
AND NOT EXISTS (SELECT 1 FROM v_access_control_nodes n
    WHERE n.access_control_uuid = a.access_control_uuid AND n.node_cidr = '54.65.63.192/30'::text);
INSERT INTO v_access_control_nodes (access_control_node_uuid, access_control_uuid,
    node_type, node_cidr, node_description, insert_date)
SELECT 'c583e976-f839-5d5f-81c4-2e717bee67eb'::uuid, a.access_control_uuid, 'allow', '54.169.127.128/30'::text, 'Twilio SIP signalling: Asia-Pacific Singapore (sg1)'::text, now()
FROM v_access_controls a WHERE a.access_control_name = 'providers'
AND NOT EXISTS (SELECT 1 FROM v_access_control_nodes n
    WHERE n.access_control_uuid = a.access_control_uuid AND n.node_cidr = '54.169.127.128/30'::text);
INSERT INTO v_access_control_nodes (access_control_node_uuid, access_control_uuid,
    node_type, node_cidr, node_description, insert_date)
SELECT '95eb3381-d8d2-5ccd-8d7e-14340552aba1'::uuid, a.access_control_uuid, 'allow', '54.252.254.64/30'::text, 'Twilio SIP signalling: Asia-Pacific Sydney (au1)'::text, now()
FROM v_access_controls a WHERE a.access_control_name = 'providers'
AND NOT EXISTS (SELECT 1 FROM v_access_control_nodes n
    WHERE n.access_control_uuid = a.access_control_uuid AND n.node_cidr = '54.252.254.64/30'::text);
INSERT INTO v_access_control_nodes (access_control_node_uuid, access_control_uuid,
    node_type, node_cidr, node_description, insert_date)
SELECT 'c40e2d37-e917-5dfa-80ab-e150bc0f6c8d'::uuid, a.access_control_uuid, 'allow', '177.71.206.192/30'::text, 'Twilio SIP signalling: South America Sao Paulo (br1)'::text, now()
FROM v_access_controls a WHERE a.access_control_name = 'providers'
AND NOT EXISTS (SELECT 1 FROM v_access_control_nodes n
    WHERE n.access_control_uuid = a.access_control_uuid AND n.node_cidr = '177.71.206.192/30'::text);
COMMIT;

-- Roll back (removes only the nodes added above):
-- DELETE FROM v_access_control_nodes WHERE access_control_node_uuid = ANY(ARRAY['31a891eb-764e-5efc-953e-90b87e1838e1', '66c44f75-9598-5df7-826b-888ae44d9514', '9790a99a-d8ed-5379-a00a-7b0707551401', '02361c90-4707-5dda-bb3f-5f3a08966317', '6b236564-768c-541d-81d3-a63a35f34d93', 'c583e976-f839-5d5f-81c4-2e717bee67eb', '95eb3381-d8d2-5ccd-8d7e-14340552aba1', 'c40e2d37-e917-5dfa-80ab-e150bc0f6c8d']::uuid[]);
