"""MII pretraining (paper Eq. 11-13): Train.py with stage 'pretrain' and -loss mii by default.

    accelerate launch --config_file accelerate_config.yaml Pretrain.py -dataset_files bt_files.dat -save_path checkpoint_miirs_bt/

Writes <save_path>/pretrain-<epoch>.pth; same flags as Train.py (python Pretrain.py -h).
"""
import Train

if __name__ == "__main__":
    Train.main(stage="pretrain")
