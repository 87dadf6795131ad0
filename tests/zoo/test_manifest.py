"""The manifest's saves: each writes its own changed entries into the manifest as it is on
disk, under a lock of its folder, so that concurrent writers (two campaign drivers publishing
at once, nq-zoo add beside them) do not lose each other's entries."""
import dataclasses
import shutil
import threading
import time

from nq_plugin.zoo.manifest import PACKAGE_MANIFEST, Manifest, _folder_lock


def two_names(manifest):
    return sorted(manifest.models)[:2]


def test_two_loaded_copies_saving_different_entries_keep_both(tmp_path):
    path = str(tmp_path / "manifest.json")
    shutil.copyfile(PACKAGE_MANIFEST, path)
    first, second = Manifest.load(path), Manifest.load(path)
    a, b = two_names(first)
    first.put(dataclasses.replace(first.get(a), notes="changed by the first"))
    second.put(dataclasses.replace(second.get(b), notes="changed by the second"))
    first.save()
    second.save()  # before: wrote its stale copy of a over the first's change
    saved = Manifest.load(path)
    assert saved.get(a).notes == "changed by the first"
    assert saved.get(b).notes == "changed by the second"
    assert sorted(saved.models) == sorted(Manifest.load(PACKAGE_MANIFEST).models)


def test_a_save_waits_for_the_folder_lock(tmp_path):
    path = str(tmp_path / "manifest.json")
    shutil.copyfile(PACKAGE_MANIFEST, path)
    manifest = Manifest.load(path)
    name = two_names(manifest)[0]
    manifest.put(dataclasses.replace(manifest.get(name), notes="saved after the lock"))
    done = threading.Event()
    with _folder_lock(path):
        writer = threading.Thread(target=lambda: (manifest.save(), done.set()))
        writer.start()
        time.sleep(0.3)
        assert not done.is_set(), "the save did not wait for the lock"
    writer.join(10)
    assert done.is_set()
    assert Manifest.load(path).get(name).notes == "saved after the lock"
