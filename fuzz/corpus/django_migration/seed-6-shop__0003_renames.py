from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('shop', '0002_remove_book_product_ptr_delete_legacy_and_more'),
        ('catalog', '0003_rename'),
    ]

    operations = [
        migrations.RenameField(
            model_name='product',
            old_name='name',
            new_name='title',
        ),
        migrations.RenameField(
            model_name='order',
            old_name='products',
            new_name='items',
        ),
        migrations.AlterField(
            model_name='order',
            name='note',
            field=models.TextField(db_column='memo'),
        ),
        migrations.AlterModelTable(
            name='order',
            table='orders',
        ),
        migrations.RenameField(
            model_name='order',
            old_name='cart',
            new_name='basket',
        ),
    ]
