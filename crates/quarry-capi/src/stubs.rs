//! Every librados/librbd function a Debian consumer (QEMU 7.2, fio 3.33, python3-rados,
//! python3-rbd 16.2, libvirt 9.0; `consumers.txt`) references that Quarry does not
//! implement yet, so those programs load (they bind every symbol at load time). Generated
//! by `scripts/gen-capi-stubs.py` from Ceph's headers: do not edit by hand.
//!
//! int, ssize_t and int64_t functions return `-EOPNOTSUPP`; void ones do nothing; those
//! returning a pointer return NULL, those returning uint64_t 0. Arguments are ignored.

use crate::EOPNOTSUPP;

macro_rules! stub {
    (int $name:ident) => {
        #[doc = "Not supported: returns `-EOPNOTSUPP`."]
        #[no_mangle]
        pub extern "C" fn $name() -> std::ffi::c_int {
            EOPNOTSUPP
        }
    };
    (ssize $name:ident) => {
        #[doc = "Not supported: returns `-EOPNOTSUPP`."]
        #[no_mangle]
        pub extern "C" fn $name() -> i64 {
            EOPNOTSUPP as i64
        }
    };
    (zero $name:ident) => {
        #[doc = "Not supported: returns 0."]
        #[no_mangle]
        pub extern "C" fn $name() -> u64 {
            0
        }
    };
    (void $name:ident) => {
        #[doc = "Not supported: does nothing."]
        #[no_mangle]
        pub extern "C" fn $name() {}
    };
    (null $name:ident) => {
        #[doc = "Not supported: returns NULL."]
        #[no_mangle]
        pub extern "C" fn $name() -> *mut std::ffi::c_void {
            std::ptr::null_mut()
        }
    };
}

stub!(int rados_aio_append);
stub!(int rados_aio_cmpext);
stub!(int rados_aio_exec);
stub!(int rados_aio_flush);
stub!(int rados_aio_notify);
stub!(int rados_aio_read_op_operate);
stub!(int rados_aio_rmxattr);
stub!(int rados_aio_setxattr);
stub!(int rados_aio_stat);
stub!(int rados_aio_writesame);
stub!(int rados_append);
stub!(int rados_application_enable);
stub!(int rados_application_list);
stub!(int rados_application_metadata_get);
stub!(int rados_application_metadata_list);
stub!(int rados_application_metadata_remove);
stub!(int rados_application_metadata_set);
stub!(int rados_blocklist_add);
stub!(int rados_cmpext);
stub!(int rados_conf_parse_argv_remainder);
stub!(int rados_conf_parse_env);
stub!(int rados_create_with_context);
stub!(int rados_decode_notify_response);
stub!(int rados_exec);
stub!(void rados_free_notify_response);
stub!(zero rados_get_instance_id);
stub!(zero rados_get_last_version);
stub!(int rados_getaddrs);
stub!(int rados_getxattrs);
stub!(void rados_getxattrs_end);
stub!(int rados_getxattrs_next);
stub!(int rados_inconsistent_pg_list);
stub!(null rados_ioctx_get_cluster);
stub!(void rados_ioctx_locator_set_key);
stub!(int rados_ioctx_pool_required_alignment2);
stub!(int rados_ioctx_pool_requires_alignment2);
stub!(int rados_ioctx_selfmanaged_snap_create);
stub!(int rados_ioctx_selfmanaged_snap_remove);
stub!(int rados_ioctx_selfmanaged_snap_rollback);
stub!(int rados_ioctx_selfmanaged_snap_set_write_ctx);
stub!(int rados_ioctx_snap_create);
stub!(int rados_ioctx_snap_get_name);
stub!(int rados_ioctx_snap_get_stamp);
stub!(int rados_ioctx_snap_list);
stub!(int rados_ioctx_snap_lookup);
stub!(int rados_ioctx_snap_remove);
stub!(int rados_ioctx_snap_rollback);
stub!(void rados_ioctx_snap_set_read);
stub!(int rados_lock_exclusive);
stub!(int rados_lock_shared);
stub!(int rados_mgr_command);
stub!(int rados_mgr_command_target);
stub!(int rados_mon_command_target);
stub!(int rados_monitor_log);
stub!(int rados_monitor_log2);
stub!(int rados_notify2);
stub!(int rados_notify_ack);
stub!(int rados_osd_command);
stub!(int rados_pg_command);
stub!(int rados_ping_monitor);
stub!(int rados_pool_create_with_all);
stub!(int rados_pool_create_with_auid);
stub!(int rados_pool_create_with_crush_rule);
stub!(int rados_pool_get_base_tier);
stub!(void rados_read_op_cmpext);
stub!(void rados_read_op_set_flags);
stub!(int rados_service_register);
stub!(int rados_service_update_status);
stub!(void rados_set_pool_full_try);
stub!(int rados_unlock);
stub!(void rados_unset_pool_full_try);
stub!(int rados_unwatch2);
stub!(int rados_watch3);
stub!(int rados_watch_check);
stub!(int rados_watch_flush);
stub!(void rados_write_op_append);
stub!(void rados_write_op_assert_version);
stub!(void rados_write_op_cmpext);
stub!(void rados_write_op_exec);
stub!(void rados_write_op_omap_cmp);
stub!(void rados_write_op_omap_rm_range2);
stub!(void rados_write_op_set_flags);
stub!(void rados_write_op_writesame);
stub!(int rados_writesame);
stub!(int rbd_aio_close);
stub!(int rbd_aio_mirror_image_create_snapshot);
stub!(int rbd_aio_mirror_image_get_info);
stub!(int rbd_aio_mirror_image_get_mode);
stub!(int rbd_aio_open);
stub!(int rbd_aio_open_by_id);
stub!(int rbd_aio_open_by_id_read_only);
stub!(int rbd_aio_open_read_only);
stub!(int rbd_config_image_list);
stub!(void rbd_config_image_list_cleanup);
stub!(int rbd_config_pool_list);
stub!(void rbd_config_pool_list_cleanup);
stub!(int rbd_copy3);
stub!(int rbd_deep_copy);
stub!(int rbd_features_from_string);
stub!(int rbd_features_to_string);
stub!(int rbd_get_access_timestamp);
stub!(int rbd_get_create_timestamp);
stub!(ssize rbd_get_data_pool_id);
stub!(int rbd_get_group);
stub!(int rbd_get_migration_source_spec);
stub!(int rbd_get_modify_timestamp);
stub!(int rbd_get_overlap);
stub!(int rbd_group_create);
stub!(int rbd_group_image_add);
stub!(int rbd_group_image_list);
stub!(int rbd_group_image_list_cleanup);
stub!(int rbd_group_image_remove);
stub!(int rbd_group_info_cleanup);
stub!(int rbd_group_list);
stub!(int rbd_group_remove);
stub!(int rbd_group_rename);
stub!(int rbd_group_snap_create2);
stub!(int rbd_group_snap_list);
stub!(int rbd_group_snap_list_cleanup);
stub!(int rbd_group_snap_remove);
stub!(int rbd_group_snap_rename);
stub!(int rbd_group_snap_rollback);
stub!(int rbd_list_descendants);
stub!(int rbd_lock_break);
stub!(int rbd_lock_get_owners);
stub!(void rbd_lock_get_owners_cleanup);
stub!(int rbd_metadata_list);
stub!(int rbd_migration_abort_with_progress);
stub!(int rbd_migration_commit_with_progress);
stub!(int rbd_migration_execute_with_progress);
stub!(int rbd_migration_prepare);
stub!(int rbd_migration_prepare_import);
stub!(int rbd_migration_status);
stub!(void rbd_migration_status_cleanup);
stub!(int rbd_mirror_image_create_snapshot2);
stub!(int rbd_mirror_image_demote);
stub!(int rbd_mirror_image_disable);
stub!(int rbd_mirror_image_enable2);
stub!(int rbd_mirror_image_get_global_status);
stub!(int rbd_mirror_image_get_info);
stub!(void rbd_mirror_image_get_info_cleanup);
stub!(int rbd_mirror_image_get_instance_id);
stub!(int rbd_mirror_image_get_mode);
stub!(void rbd_mirror_image_global_status_cleanup);
stub!(int rbd_mirror_image_global_status_list);
stub!(void rbd_mirror_image_global_status_list_cleanup);
stub!(int rbd_mirror_image_info_list);
stub!(void rbd_mirror_image_info_list_cleanup);
stub!(int rbd_mirror_image_instance_id_list);
stub!(void rbd_mirror_image_instance_id_list_cleanup);
stub!(int rbd_mirror_image_promote);
stub!(int rbd_mirror_image_resync);
stub!(int rbd_mirror_image_status_summary);
stub!(int rbd_mirror_mode_get);
stub!(int rbd_mirror_mode_set);
stub!(int rbd_mirror_peer_bootstrap_create);
stub!(int rbd_mirror_peer_bootstrap_import);
stub!(int rbd_mirror_peer_site_add);
stub!(int rbd_mirror_peer_site_get_attributes);
stub!(int rbd_mirror_peer_site_list);
stub!(void rbd_mirror_peer_site_list_cleanup);
stub!(int rbd_mirror_peer_site_remove);
stub!(int rbd_mirror_peer_site_set_attributes);
stub!(int rbd_mirror_peer_site_set_client_name);
stub!(int rbd_mirror_peer_site_set_name);
stub!(int rbd_mirror_site_name_get);
stub!(int rbd_mirror_site_name_set);
stub!(int rbd_mirror_uuid_get);
stub!(int rbd_namespace_create);
stub!(int rbd_namespace_list);
stub!(int rbd_namespace_remove);
stub!(int rbd_open_by_id);
stub!(int rbd_open_by_id_read_only);
stub!(int rbd_pool_init);
stub!(int rbd_pool_metadata_get);
stub!(int rbd_pool_metadata_list);
stub!(int rbd_pool_metadata_remove);
stub!(int rbd_pool_metadata_set);
stub!(void rbd_pool_stats_create);
stub!(void rbd_pool_stats_destroy);
stub!(int rbd_pool_stats_get);
stub!(int rbd_pool_stats_option_add_uint64);
stub!(int rbd_rebuild_object_map);
stub!(int rbd_snap_get_group_namespace);
stub!(int rbd_snap_get_limit);
stub!(int rbd_snap_get_mirror_namespace);
stub!(int rbd_snap_get_trash_namespace);
stub!(int rbd_snap_group_namespace_cleanup);
stub!(int rbd_snap_mirror_namespace_cleanup);
stub!(int rbd_snap_remove_by_id);
stub!(int rbd_snap_rename);
stub!(int rbd_snap_set);
stub!(int rbd_snap_set_by_id);
stub!(int rbd_snap_set_limit);
stub!(int rbd_sparsify);
stub!(int rbd_trash_purge);
stub!(int rbd_update_features);
